FROM base:1
RUN true
WORKDIRR /x
