"""Thin routers: parse the request, call the repository or a use case, return a schema."""
