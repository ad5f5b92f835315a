"""DICOM decode + preprocess per transfer syntax, full vs reduced (issue 13); writes
benchmarks/results/dicom_decode.{json,md}. `python -m benchmarks.bench_dicom_decode --help`."""
from fracture_batch.bench.dicom_decode import main

if __name__ == "__main__":
    main()
