FROM --platform=linux base:1
