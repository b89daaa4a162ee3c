"""What the tests stand on: git repositories, forge payloads, a ciserver and the services it needs run
as real processes, and clients and proxies to drive them. One module per job."""
