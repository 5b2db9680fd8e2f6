FROM base:1
HEALTHCHECK --interval=5 CMD true
