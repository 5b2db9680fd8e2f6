FROM base:1
SHELL /bin/bash -c
