RUN true
FROM base:1
