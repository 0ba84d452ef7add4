# The scheduled cleanup (docs/cleanup.md): the passes against Azurite (the generated fleets
# included), then the end-to-end runs of the real handler under devhost, fired through the
# Cleanup timer.

test-cleanup:
	go test -count=1 ./cleanup/
	go test -count=1 -run 'Sightings|Cursors|Ledger' ./azure/journal/
	go test -count=1 -run 'ReEnrolled|Orphaned|Holder' ./deprovision/
	go test -count=1 -run 'Lifecycle|CleanupPass|Findings' ./handler/
	go test -count=1 -run 'TestCleanupSettles|TestResumedCompromised|TestCleanupSettingsReach' .
	go test -count=1 -run TestCleanupTimer ./cmd/demo/

.PHONY: test-cleanup
