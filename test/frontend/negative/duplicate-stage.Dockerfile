FROM base:1 AS app
FROM base:1 AS app
