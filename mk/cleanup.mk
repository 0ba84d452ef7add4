# The scheduled cleanup (docs/cleanup.md): the passes against Azurite, then the end-to-end runs
# of the real handler under devhost, fired through the Cleanup timer.

test-cleanup:
	go test -count=1 ./cleanup/
	go test -count=1 -run 'Sightings|Cursors' ./azure/journal/
	go test -count=1 -run 'Lifecycle|CleanupPass' ./handler/
	go test -count=1 -run TestCleanupTimer ./cmd/demo/

.PHONY: test-cleanup
