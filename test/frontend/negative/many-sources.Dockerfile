FROM base:1
COPY a b /dest
