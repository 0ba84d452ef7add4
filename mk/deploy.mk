# make deploy: the app into your Azure subscription in one command, after `az login`
# (docs/deploy.md): a what-if preview of every ARM deployment first, then the infrastructure,
# the code package, the event subscriptions and a dry-run smoke test. Safe to run again.
#
#   make deploy RESOURCE_GROUP=rg-deprov LOCATION=westeurope DPS=contoso-dps \
#               HUBS=contoso-hub-1,contoso-hub-2 IOT_RESOURCE_GROUP=rg-iot
#
# Optional: APP_NAME, AUTH_CLIENT_ID, TOPIC, SENDERS, SENDER_TYPE, DRY_RUN (true until you say false),
# APP_SETTINGS, SMOKE_TEST, YES=1 (no question after the preview). Command-line variables reach
# the script through the environment; scripts/deploy.sh says what each means.
.PHONY: deploy

deploy:
	GO=$(GO) PACKAGE_ZIP=$(PACKAGE_ZIP) scripts/deploy.sh
