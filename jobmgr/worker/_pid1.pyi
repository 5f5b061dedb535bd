def start_zygote(sock: int) -> int:
    """Fork the zygote, which makes a job slot (a child that joins the cgroup, unshares the
    namespaces and forks their init) for each request on the SOCK_SEQPACKET socket sock."""
