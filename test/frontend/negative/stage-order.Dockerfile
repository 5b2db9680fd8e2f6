FROM base:1 AS a
COPY --from=b /x /x
FROM base:1 AS b
FROM a
