#!/usr/bin/env bash
# Prints a .env with fresh random credentials for compose.yaml:  ./make-env.sh > .env
set -euo pipefail
rand() { head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' | head -c "$1"; }
cat <<ENV
# the project name (docker-compose 1.29 has no top-level name: in the file)
COMPOSE_PROJECT_NAME=aerial
AERIAL_AMQP_ADMIN_USER=aerial-admin
AERIAL_AMQP_ADMIN_PASSWORD=$(rand 32)
AERIAL_AMQP_USER=aerial
AERIAL_AMQP_PASSWORD=$(rand 32)
AERIAL_S3_ACCESS_KEY=aerial$(rand 12)
AERIAL_S3_SECRET_KEY=$(rand 40)
AERIAL_S3_BUCKET=aerial
GRAFANA_ADMIN_PASSWORD=$(rand 24)
AERIAL_DASHBOARD_TOKEN=$(rand 40)
ENV
