"""What a jobmgr server and its clients agree on before they connect. Imports nothing, so a
client gets these without loading the server or the worker library."""

DEFAULT_PORT = 31234
# Receive limit for requests (an argv is small) and both limits for clients reading output.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
# A client following a silent job pings the server this often, and gives the connection up
# when a ping goes unanswered for KEEPALIVE_TIMEOUT_MS, so a host that vanished without a
# reset (a cable, a crash) is noticed in under a minute, not after TCP's two hours. The
# server accepts pings that often while a call is open (gRPC's default is one per 5 minutes,
# and a client pinging more often is cut off).
KEEPALIVE_MS = 30_000
KEEPALIVE_TIMEOUT_MS = 20_000
