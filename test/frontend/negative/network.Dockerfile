FROM base:1
RUN --network=bridge true
