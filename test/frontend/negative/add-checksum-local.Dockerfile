FROM base:1
ADD --checksum=sha256:abcd a /a
