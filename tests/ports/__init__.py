"""Contract suites: each port of `coalmine.core.ports` against every implementation of it."""
