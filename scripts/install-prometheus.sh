#!/bin/sh
# Install Debian's `prometheus` package, which the alarm tests start on 127.0.0.1.
# Idempotent; see install-debian-package.sh.
#
# The package's own service is not used: on machines with systemd it may start
# one on :9090, which the tests neither need nor touch (they start their own
# process on a free port).
set -eu
exec sh "$(dirname "$0")/install-debian-package.sh" prometheus
