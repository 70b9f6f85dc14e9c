# Sourced by every suite. CRN_SUITE_SIZE=small asks for the suite's rehearsal: the same steps and the same files,
# on the families' tiny presets at small sizes and on few maps, with the parity floors lifted (random tiny weights
# are not what a floor is for), in well under a minute or two. Its figures mean nothing: it proves that the suite
# runs as written. tests/test_benchmark_suites.py rehearses every suite.
rehearsal() { [[ ${CRN_SUITE_SIZE:-full} == small ]]; }
lifted_floor=(--min-psnr 0 --max-abs 255)
