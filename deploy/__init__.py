"""Deployment helpers: a local PostgreSQL server and the non-Docker cluster topology."""
