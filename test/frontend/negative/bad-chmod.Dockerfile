FROM base:1
COPY --chmod=999 a /a
