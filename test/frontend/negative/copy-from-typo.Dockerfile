FROM base:1 AS builder
FROM base:1
COPY --from=biulder /a /a
