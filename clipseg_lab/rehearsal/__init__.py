"""The dress rehearsal of the full profile: real-size random weights and small datasets in the real on-disk layouts."""
