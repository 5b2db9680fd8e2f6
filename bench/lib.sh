# Shared by the benchmark scripts (sourced, not run).

# four_stage_context DIR BASE: the 4-stage build bench/peers.sh compares with BuildKit and buildah
# and bench/startup.sh rebuilds: two stages write 2,000 files each, the last copies both trees and
# the context (a file at the top, one in a subdirectory).
four_stage_context() {
  local dir=$1 base=$2
  mkdir -p "$dir/sub"
  cat >"$dir/Dockerfile" <<DOCKERFILE
FROM $base AS base
RUN echo hello > /hello
FROM base AS a
RUN mkdir /a && for i in \$(seq 1 2000); do echo "a \$i" > /a/f\$i; done
FROM base AS b
RUN mkdir /b && for i in \$(seq 1 2000); do echo "b \$i" > /b/f\$i; done
FROM base
COPY --from=a /a /a
COPY --from=b /b /b
COPY . /ctx
CMD ["cat", "/hello"]
DOCKERFILE
  echo "file one" >"$dir/one.txt"
  echo "two" >"$dir/sub/two.txt"
}
