"""Code generated from proto/job.proto by `make protobufs`. Do not edit by hand."""
