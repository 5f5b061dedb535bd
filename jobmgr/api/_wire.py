"""What a jobmgr server and its clients agree on before they connect. Imports nothing, so a
client gets these without loading the server or the worker library."""

DEFAULT_PORT = 31234
# Receive limit for requests (an argv is small) and both limits for clients reading output.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
