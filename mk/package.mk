# make package: the deployment zip for Azure (infra/README.md says how to deploy it).
PACKAGE_ZIP ?= dist/dpsdeprov.zip

package:
	$(GO) run ./cmd/package -o $(PACKAGE_ZIP)
