FROM base:1
RUN --security=privileged true
