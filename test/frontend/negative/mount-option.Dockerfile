FROM base:1
RUN --mount=type=bind,target=/x,sharing=locked true
