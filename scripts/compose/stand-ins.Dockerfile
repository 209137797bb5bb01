# Studio API and Replicate stand-ins for scripts/compose-check.sh
# (scripts/container/stand_ins.py), serving tests/fixtures/photo.png.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 \
 && rm -rf /var/lib/apt/lists/*
# The context is a folder scripts/compose-check.sh fills with these two.
COPY stand_ins.py /stand_ins.py
COPY photo.png /image.png
ENV STAND_INS_BIND=0.0.0.0
USER 65534:65534
CMD ["python3", "/stand_ins.py", "3000", "3001", "/image.png", "http://stand-ins:3001"]
