FROM base:1
RUN --mount=type=cache true
