FROM base:1
RUN cat <<EOF
never closed
