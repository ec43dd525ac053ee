# kiln's container image: the static Linux binary that scripts/dist builds, on distroless
# `static` (CA certificates for TLS to AWS, /etc/passwd with the `nonroot` user, no shell).
#   docker build -t kiln --build-arg KILN_GIT_COMMIT="$(git rev-parse HEAD)" .
#   docker run --rm -v "$PWD:/work" -w /work kiln validate recipes/rudder-dataplane.yaml
# Checked by hadolint in scripts/test.sh; never built on the development machine (no engine).

FROM rust:1.95.0-slim-bookworm AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# `file` is what scripts/dist uses to check that the binary is static.
RUN apt-get update \
    && apt-get install -y --no-install-recommends file=1:5.44-3 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The build context has no .git (.dockerignore): the commit comes in as a build argument.
ARG KILN_GIT_COMMIT=unknown
ENV KILN_GIT_COMMIT=${KILN_GIT_COMMIT}
RUN scripts/dist --out /dist \
    && tar -xzf "/dist/kiln-$(rustc -vV | sed -n 's/^host: //p').tar.gz" -C /dist kiln \
    && /dist/kiln --version

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /dist/kiln /usr/local/bin/kiln
# distroless's `nonroot` user, by number so that the host can resolve it.
USER 65532:65532
WORKDIR /work
ENTRYPOINT ["kiln"]
