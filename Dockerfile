# The image of ciserver itself: one image for the API (`serve`, the default command) and for workers
# (`worker`), see the README's "Container image".
#
# Build arguments:
#   BASE_IMAGE  a Debian-based image with python3 3.11+ (default: the public python:3.11-slim)
#   WHEELHOUSE  a folder of the build context holding the wheels of ciserver, of its dependencies
#               and of pip, made with `pip wheel --wheel-dir DIR . pip` by a Python of the same
#               version as the base's (markers such as python_full_version; see
#               tests/support/wheelhouse.py, which checks it with the base's own Python). Empty (the
#               default): the build stage makes them itself, which needs pip in the base image and
#               access to the package index. Set it when the build cannot reach the index, or on a
#               base without pip.
#   EXTRAS      the package's extras to install (default `postgres`: the psycopg driver, so one image
#               serves SQLite and PostgreSQL alike); empty for none
#   ROUTER      `nginx` adds Debian's nginx: the deployer's image (`ciserver worker --router` runs it as
#               the router deployments shift traffic with); empty (the default): no nginx
ARG BASE_IMAGE=python:3.11-slim

# Build stage: the wheels of ciserver and its dependencies, installed into a virtual environment
# the runtime stage copies whole (same base, same path), so no wheel ends up in a runtime layer.
FROM ${BASE_IMAGE} AS build
ARG WHEELHOUSE=
ARG EXTRAS=postgres
WORKDIR /src
COPY . .
# The dependencies are read from pyproject.toml by pip itself: nothing here lists them again. pip
# runs from its own wheel, so the base needs neither pip nor ensurepip (Debian's python3 has
# neither), and the venv keeps no pip.
RUN set -eu; mkdir /wheels; \
    extras=${EXTRAS:+[$EXTRAS]}; \
    if [ -n "$WHEELHOUSE" ]; then cp "$WHEELHOUSE"/*.whl /wheels/; \
    else python3 -m pip wheel --no-cache-dir --wheel-dir /wheels ".$extras" pip; fi; \
    python3 -m venv --without-pip /opt/ciserver; \
    pip=$(ls /wheels/pip-*.whl); \
    /opt/ciserver/bin/python "$pip/pip" install --no-cache-dir --no-index --find-links /wheels \
      --disable-pip-version-check "ciserver$extras"

# Runtime stage: the virtual environment, git, and an unprivileged user (nginx too with ROUTER=nginx).
FROM ${BASE_IMAGE}
ARG ROUTER=
# git clones the projects; the Docker Engine is reached through its socket with the docker SDK, so
# no docker CLI. Bases that ship git (the tests' base) and need no nginx skip apt altogether. No
# service starts at install (policy-rc.d): nginx runs only as ciserver starts it.
RUN set -eu; \
    packages=; \
    command -v git >/dev/null || packages="git ca-certificates"; \
    case "$ROUTER" in nginx) packages="$packages nginx-light" ;; "") ;; \
      *) echo "ROUTER must be nginx or empty, not '$ROUTER'" >&2; exit 1 ;; esac; \
    if [ -n "$packages" ]; then \
      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; \
      apt-get update; DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $packages; \
      rm -rf /var/lib/apt/lists/* /usr/sbin/policy-rc.d /etc/nginx/sites-enabled/default; \
    fi; \
    useradd --system --uid 10001 --user-group --home-dir /var/lib/ciserver --no-create-home \
      --shell /usr/sbin/nologin ciserver; \
    install -d -o ciserver -g ciserver -m 0750 /var/lib/ciserver

ENV PATH=/opt/ciserver/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    CISERVER_DATA_DIR=/var/lib/ciserver
WORKDIR /var/lib/ciserver
VOLUME ["/var/lib/ciserver"]
EXPOSE 8080
# The API can run unprivileged. A worker needs the Docker socket: run it with the socket mounted and
# its group added (`--group-add "$(stat -c %g /var/run/docker.sock)"`, Compose: `group_add`).
USER ciserver
# The API's liveness endpoint; python3 rather than curl, which slim bases do not have. A worker
# serves no HTTP: give its container `--no-healthcheck` (Compose: `healthcheck: {disable: true}`).
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python3", "-c", "import sys, urllib.request as u; sys.exit(u.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status != 200)"]
ENTRYPOINT ["ciserver"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
# Last: with the legacy builder each instruction after a changed layer costs a step of its own.
COPY --from=build /opt/ciserver /opt/ciserver
