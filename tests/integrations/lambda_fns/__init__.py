"""Handlers the local Lambda endpoint's tests run, as a user's function package would be."""
