FROM base:1
COPY --chmodd=644 a /a
