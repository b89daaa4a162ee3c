"""ciserver: a self-hosted Git webhook CI/CD server."""
