"""Wire formats shared by the runtimes and the gateway."""
