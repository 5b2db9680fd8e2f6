FROM base:1
RUN --mount=type=cahce,target=/x true
