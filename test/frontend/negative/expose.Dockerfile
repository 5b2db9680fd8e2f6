FROM base:1
EXPOSE 80/tcpx
