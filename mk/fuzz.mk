# Fuzz the handler's decoders and normaliser, each target in turn (not in CI).
# FUZZ_MINUTES sets minutes per target (default 5); see docs/reliability.md.
FUZZ_MINUTES ?= 5

fuzz:
	scripts/fuzz.sh $(FUZZ_MINUTES)
