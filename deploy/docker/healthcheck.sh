#!/bin/sh
# cutover-healthcheck [PATH]: GET PATH (default /health) on cutover's admin API at 127.0.0.1,
# for Docker's HEALTHCHECK and Kubernetes exec probes. Exit 0 on HTTP 2xx, else 1 (Docker
# reserves 2), with curl's reason on stderr.
#
# Port: the one in CUTOVER_ADMIN_LISTEN (HOST:PORT) if set, else 9033 (the image's admin_listen).
# Token: CUTOVER_ADMIN_TOKEN if set, sent as "Authorization: Bearer ..." through curl's stdin,
# so it never appears in a process list.
set -u
path=${1:-/health}
listen=${CUTOVER_ADMIN_LISTEN:-0.0.0.0:9033}
url="http://127.0.0.1:${listen##*:}${path}"
if [ -n "${CUTOVER_ADMIN_TOKEN:-}" ]; then
    printf 'Authorization: Bearer %s\n' "$CUTOVER_ADMIN_TOKEN" |
        curl --fail --silent --show-error --max-time 4 --output /dev/null --header @- "$url" ||
        exit 1
else
    curl --fail --silent --show-error --max-time 4 --output /dev/null "$url" || exit 1
fi
