"""jobmgr: run Linux processes in cgroups and namespaces on behalf of remote clients."""
