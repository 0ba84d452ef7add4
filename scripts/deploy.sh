#!/usr/bin/env bash
# Deploys the app to Azure in one command: `make deploy` runs it (docs/deploy.md). After
# `az login`, it resolves your DPS and hubs, previews every ARM deployment with what-if, asks
# (or takes YES=1), deploys infra/main.json, infra/iot-access.json into each resource group
# holding the DPS or a hub, builds and deploys the code package, deploys infra/events.json,
# and sends one dry-run smoke-test event through the device-events topic, with a sender role
# for you that it removes again. Safe to run again: every step converges (ARM incremental
# deployments with fixed names, role assignments with deterministic names, the same package).
#
# Inputs, from the environment (mk/deploy.mk passes make variables of the same names):
#   RESOURCE_GROUP      the app's resource group; created in LOCATION when missing      (required)
#   LOCATION            its region, needed only to create it (one with Flex Consumption)
#   DPS                 your Device Provisioning Service: a name in IOT_RESOURCE_GROUP, or
#                       its resource id                                                  (required)
#   HUBS                the IoT hubs behind it, comma-separated names in IOT_RESOURCE_GROUP
#                       or resource ids                                                  (required)
#   IOT_RESOURCE_GROUP  where DPS and hub names are found (default RESOURCE_GROUP)
#   APP_NAME            the function app's name (default: main.json's, from the group's id)
#   AUTH_CLIENT_ID      the app registration's client id: turns on App Service authentication
#                       for signed-in operators (docs/deploy.md, signed-in operators and app roles)
#   TOPIC               the device-events topic (default <app>-device-events; created)
#   SENDERS             object ids allowed to publish device events, comma-separated
#   SENDER_TYPE         their principal type: ServicePrincipal (default), User or Group
#   DRY_RUN             true or false; default: what the app has now, true on a first deployment
#   APP_SETTINGS        more app settings, NAME=VALUE separated by ';' (docs/app.md lists them)
#   SMOKE_TEST          true (default) or false
#   YES                 1: deploy after the preview without asking
#   AZ, GO              the Azure CLI and Go commands (default az, go)
#   PACKAGE_ZIP         where the code package is built (default dist/dpsdeprov.zip)
#   POLL_SECONDS        wait between checks while the code and the smoke test land (default 10)
set -euo pipefail

AZ="${AZ:-az}"
GO="${GO:-go}"
POLL_SECONDS="${POLL_SECONDS:-10}"
PACKAGE_ZIP="${PACKAGE_ZIP:-dist/dpsdeprov.zip}"
MIN_AZ_VERSION="2.60.0" # the Flex Consumption commands (functionapp ... on FC1) need it
APP_DEPLOYMENT="deprov-app"
EVENTS_DEPLOYMENT="deprov-events"
ACCESS_DEPLOYMENT="deprov-iot-access"
SENDER_ROLE="d5a91429-5739-47e2-a06b-3470a27159e7" # EventGrid Data Sender
SMOKE_SOURCE="urn:dpsdeprov:smoke-test"

cd "$(dirname "$0")/.."

say() { printf '== %s\n' "$*" >&2; }
die() {
	printf 'deploy: %s\n' "$*" >&2
	exit 1
}

# ---- inputs, checked before anything is called --------------------------------------------

check_inputs() {
	local problems=()
	[ -n "${RESOURCE_GROUP:-}" ] || problems+=("RESOURCE_GROUP is required: the app's resource group")
	[ -z "${RESOURCE_GROUP:-}" ] || [[ "$RESOURCE_GROUP" =~ ^[-A-Za-z0-9_.()]{1,90}$ ]] ||
		problems+=("RESOURCE_GROUP \"$RESOURCE_GROUP\" is not a resource group name")
	[ -n "${DPS:-}" ] || problems+=("DPS is required: your Device Provisioning Service's name or resource id")
	[ -n "${HUBS:-}" ] || problems+=("HUBS is required: your IoT hubs' names or resource ids, comma-separated")
	case "${DRY_RUN:-}" in "" | true | false) ;; *) problems+=("DRY_RUN is \"$DRY_RUN\": true or false") ;; esac
	case "${SMOKE_TEST:-true}" in true | false) ;; *) problems+=("SMOKE_TEST is \"$SMOKE_TEST\": true or false") ;; esac
	case "${SENDER_TYPE:-ServicePrincipal}" in ServicePrincipal | User | Group) ;; *)
		problems+=("SENDER_TYPE is \"$SENDER_TYPE\": ServicePrincipal, User or Group") ;;
	esac
	local s
	[ -z "${AUTH_CLIENT_ID:-}" ] || [[ "$AUTH_CLIENT_ID" =~ ^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$ ]] ||
		problems+=("AUTH_CLIENT_ID \"$AUTH_CLIENT_ID\" is not a client id")
	for s in $(split_list "${SENDERS:-}"); do
		[[ "$s" =~ ^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$ ]] || problems+=("SENDERS: \"$s\" is not an object id")
	done
	for s in $(split_list "${DPS:-}") $(split_list "${HUBS:-}"); do
		[[ "$s" =~ ^(/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Devices/(provisioningServices|IotHubs)/)?[-A-Za-z0-9]{3,64}$ ]] ||
			problems+=("\"$s\" is neither a DPS or hub name nor its resource id")
	done
	if [ -n "${APP_SETTINGS:-}" ]; then
		local kv
		while IFS= read -r kv; do
			[ -n "$kv" ] || continue
			local name="${kv%%=*}"
			if [[ "$kv" != *=* || ! "$name" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]]; then
				problems+=("APP_SETTINGS: \"$kv\" is not NAME=VALUE")
			elif [ "$name" = DRY_RUN ]; then
				problems+=("APP_SETTINGS: set DRY_RUN with the DRY_RUN variable")
			elif [[ "$kv" =~ [[:cntrl:]] ]]; then
				problems+=("APP_SETTINGS: $name has a control character")
			fi
		done < <(tr ';' '\n' <<<"$APP_SETTINGS")
	fi
	if [ ${#problems[@]} -gt 0 ]; then
		printf 'deploy: %s\n' "${problems[@]}" >&2
		printf 'usage: make deploy RESOURCE_GROUP=rg-deprov LOCATION=westeurope DPS=contoso-dps HUBS=contoso-hub-1,contoso-hub-2 [IOT_RESOURCE_GROUP=rg-iot] (docs/deploy.md)\n' >&2
		exit 2
	fi
}

split_list() { tr ',' '\n' <<<"$1" | sed 's/^ *//; s/ *$//' | grep -v '^$' || true; }

# json_string prints s as a JSON string (it holds no control character: checked above).
json_string() {
	local s="${1//\\/\\\\}"
	printf '"%s"' "${s//\"/\\\"}"
}

# version_at_least A B: A >= B for dotted versions.
version_at_least() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }

# ---- what exists --------------------------------------------------------------------------

check_tools() {
	command -v "$AZ" >/dev/null || die "the Azure CLI ($AZ) is not installed"
	local v
	v="$("$AZ" version --query '"azure-cli"' -o tsv)" || die "\`$AZ version\` failed"
	version_at_least "$v" "$MIN_AZ_VERSION" ||
		die "Azure CLI $v is too old: the Flex Consumption commands need $MIN_AZ_VERSION or later (az upgrade)"
	SUBSCRIPTION="$("$AZ" account show --query id -o tsv 2>/dev/null)" || die "not signed in: run az login (and az account set -s <subscription>)"
	command -v "$GO" >/dev/null || die "Go ($GO) is needed to build the package"
}

# resource_id KIND NAME-OR-ID: the full id of a DPS (provisioningServices) or hub (IotHubs).
resource_id() {
	if [[ "$2" == /subscriptions/* ]]; then
		printf '%s' "$2"
	else
		printf '/subscriptions/%s/resourceGroups/%s/providers/Microsoft.Devices/%s/%s' "$SUBSCRIPTION" "${IOT_RESOURCE_GROUP:-$RESOURCE_GROUP}" "$1" "$2"
	fi
}

group_of() { sed -E 's#^/subscriptions/[^/]+/resourceGroups/([^/]+)/.*#\1#' <<<"$1"; }
name_of() { sed -E 's#.*/##' <<<"$1"; }

resolve_iot() {
	DPS_ID="$(resource_id provisioningServices "$DPS")"
	DPS_HOST="$("$AZ" resource show --ids "$DPS_ID" --query properties.serviceOperationsHostName -o tsv)" ||
		die "DPS $DPS_ID not found: check DPS and IOT_RESOURCE_GROUP"
	HUB_IDS=() HUB_HOSTS=() HUB_LOCATIONS=()
	local h id
	for h in $(split_list "$HUBS"); do
		id="$(resource_id IotHubs "$h")"
		local out
		out="$("$AZ" resource show --ids "$id" --query "[properties.hostName, location]" -o tsv)" ||
			die "IoT hub $id not found: check HUBS and IOT_RESOURCE_GROUP"
		HUB_IDS+=("$id")
		HUB_HOSTS+=("$(sed -n 1p <<<"$out")")
		HUB_LOCATIONS+=("$(sed -n 2p <<<"$out")")
	done
	say "DPS $DPS_HOST; hubs ${HUB_HOSTS[*]}"
}

# check_group sets NEW_GROUP when the resource group is still to be created.
check_group() {
	NEW_GROUP=""
	if "$AZ" group show -n "$RESOURCE_GROUP" -o none 2>/dev/null; then
		return
	fi
	[ -n "${LOCATION:-}" ] || die "resource group $RESOURCE_GROUP does not exist: give LOCATION to create it (az functionapp list-flexconsumption-locations)"
	NEW_GROUP=1
}

# existing_app prints the app of an earlier deployment, if any.
existing_app() {
	"$AZ" deployment group show -g "$RESOURCE_GROUP" -n "$APP_DEPLOYMENT" --query properties.outputs.functionAppName.value -o tsv 2>/dev/null || true
}

# decide_dry_run sets DRY_RUN: as asked, else as the app has it, else true (a first deployment
# changes nothing in DPS or the hubs until the operator says so).
decide_dry_run() {
	if [ -n "${DRY_RUN:-}" ]; then
		return
	fi
	DRY_RUN=true
	if [ -n "$APP" ]; then
		local now
		now="$("$AZ" functionapp config appsettings list -g "$RESOURCE_GROUP" -n "$APP" --query "[?name=='DRY_RUN'].value | [0]" -o tsv 2>/dev/null || true)"
		case "$now" in true | false) DRY_RUN="$now" ;; esac
	fi
}

# ---- parameters ---------------------------------------------------------------------------

write_main_parameters() {
	local hosts="" settings h kv
	for h in "${HUB_HOSTS[@]}"; do hosts+="${hosts:+,}$(json_string "$h")"; done
	settings="{\"name\":\"DRY_RUN\",\"value\":\"$DRY_RUN\"}"
	if [ -n "${APP_SETTINGS:-}" ]; then
		while IFS= read -r kv; do
			[ -n "$kv" ] || continue
			settings+=",{\"name\":$(json_string "${kv%%=*}"),\"value\":$(json_string "${kv#*=}")}"
		done < <(tr ';' '\n' <<<"$APP_SETTINGS")
	fi
	local app_param=""
	[ -z "${APP_NAME:-}" ] || app_param=",\"appName\":{\"value\":$(json_string "$APP_NAME")}"
	[ -z "${AUTH_CLIENT_ID:-}" ] || app_param+=",\"authClientId\":{\"value\":$(json_string "$AUTH_CLIENT_ID")}"
	cat >"$WORK/main.parameters.json" <<EOF
{"\$schema":"https://schema.management.azure.com/schemas/2019-04-01/deploymentParameters.json#","contentVersion":"1.0.0.0","parameters":{
"dpsHostName":{"value":$(json_string "$DPS_HOST")},"iotHubHostNames":{"value":[$hosts]},"additionalAppSettings":{"value":[$settings]}$app_param}}
EOF
}

# iot_groups prints each resource group holding the DPS or a hub once.
iot_groups() { { group_of "$DPS_ID"; for h in "${HUB_IDS[@]}"; do group_of "$h"; done; } | sort -u; }

write_access_parameters() { # GROUP PRINCIPAL FILE
	local dps="" hubs="" h
	[ "$(group_of "$DPS_ID")" != "$1" ] || dps="$(name_of "$DPS_ID")"
	for h in "${HUB_IDS[@]}"; do
		[ "$(group_of "$h")" != "$1" ] || hubs+="${hubs:+,}$(json_string "$(name_of "$h")")"
	done
	cat >"$3" <<EOF
{"\$schema":"https://schema.management.azure.com/schemas/2019-04-01/deploymentParameters.json#","contentVersion":"1.0.0.0","parameters":{
"principalId":{"value":$(json_string "$2")},"dpsName":{"value":$(json_string "$dps")},"iotHubNames":{"value":[$hubs]}}}
EOF
}

write_events_parameters() {
	local senders="" hubs="" s i
	for s in $(split_list "${SENDERS:-}"); do senders+="${senders:+,}$(json_string "$s")"; done
	for i in "${!HUB_IDS[@]}"; do
		hubs+="${hubs:+,}{\"resourceId\":$(json_string "${HUB_IDS[$i]}"),\"location\":$(json_string "${HUB_LOCATIONS[$i]}")}"
	done
	cat >"$WORK/events.parameters.json" <<EOF
{"\$schema":"https://schema.management.azure.com/schemas/2019-04-01/deploymentParameters.json#","contentVersion":"1.0.0.0","parameters":{
"functionAppName":{"value":$(json_string "$APP")},"storageAccountName":{"value":$(json_string "$STORAGE")},
"topicName":{"value":$(json_string "$TOPIC")},"senderPrincipalIds":{"value":[$senders]},
"senderPrincipalType":{"value":$(json_string "${SENDER_TYPE:-ServicePrincipal}")},"iotHubs":{"value":[$hubs]}}}
EOF
}

output() { # DEPLOYMENT NAME
	"$AZ" deployment group show -g "$RESOURCE_GROUP" -n "$1" --query "properties.outputs.$2.value" -o tsv
}

# ---- preview, then deploy -----------------------------------------------------------------

preview() {
	if [ -n "$NEW_GROUP" ]; then
		say "resource group $RESOURCE_GROUP does not exist: it is created in $LOCATION, with everything infra/main.json declares"
	else
		say "what-if: infra/main.json into $RESOURCE_GROUP"
		"$AZ" deployment group what-if -g "$RESOURCE_GROUP" -n "$APP_DEPLOYMENT" --template-file infra/main.json --parameters "@$WORK/main.parameters.json"
	fi
	if [ -n "$APP" ]; then
		local principal g
		principal="$(output "$APP_DEPLOYMENT" principalId)"
		for g in $(iot_groups); do
			write_access_parameters "$g" "$principal" "$WORK/access-$g.parameters.json"
			say "what-if: infra/iot-access.json into $g"
			"$AZ" deployment group what-if -g "$g" -n "$ACCESS_DEPLOYMENT" --template-file infra/iot-access.json --parameters "@$WORK/access-$g.parameters.json"
		done
		STORAGE="$(output "$APP_DEPLOYMENT" storageAccountName)"
		TOPIC="${TOPIC:-$APP-device-events}"
		write_events_parameters
		say "what-if: infra/events.json into $RESOURCE_GROUP"
		"$AZ" deployment group what-if -g "$RESOURCE_GROUP" -n "$EVENTS_DEPLOYMENT" --template-file infra/events.json --parameters "@$WORK/events.parameters.json"
	else
		say "first deployment: infra/iot-access.json (the app identity's roles on the DPS and hubs) and infra/events.json (the device-events topic and subscriptions) are previewed once the app exists"
	fi
	say "the app's DRY_RUN will be $DRY_RUN"
}

confirm() {
	if [ "${YES:-}" = 1 ]; then
		return
	fi
	if [ ! -t 0 ]; then
		say "preview only: nothing was deployed. Run again with YES=1 to deploy what the preview shows."
		exit 3
	fi
	local answer
	read -r -p "Deploy this? [y/N] " answer
	[[ "$answer" =~ ^[Yy] ]] || {
		say "nothing was deployed"
		exit 3
	}
}

deploy_infra() {
	if [ -n "$NEW_GROUP" ]; then
		say "creating resource group $RESOURCE_GROUP in $LOCATION"
		"$AZ" group create -n "$RESOURCE_GROUP" -l "$LOCATION" -o none
	fi
	say "deploying infra/main.json into $RESOURCE_GROUP"
	"$AZ" deployment group create -g "$RESOURCE_GROUP" -n "$APP_DEPLOYMENT" --template-file infra/main.json --parameters "@$WORK/main.parameters.json" -o none
	APP="$(output "$APP_DEPLOYMENT" functionAppName)"
	STORAGE="$(output "$APP_DEPLOYMENT" storageAccountName)"
	local principal g
	principal="$(output "$APP_DEPLOYMENT" principalId)"
	for g in $(iot_groups); do
		write_access_parameters "$g" "$principal" "$WORK/access-$g.parameters.json"
		say "deploying infra/iot-access.json into $g"
		"$AZ" deployment group create -g "$g" -n "$ACCESS_DEPLOYMENT" --template-file infra/iot-access.json --parameters "@$WORK/access-$g.parameters.json" -o none
	done
}

deploy_code() {
	say "building the package"
	"$GO" run ./cmd/package -o "$PACKAGE_ZIP" >&2
	say "deploying the package to $APP"
	"$AZ" functionapp deployment source config-zip -g "$RESOURCE_GROUP" -n "$APP" --src "$PACKAGE_ZIP" -o none
	# Event Grid accepts the function as a destination only once the host has loaded it.
	local tries=0
	until "$AZ" functionapp function show -g "$RESOURCE_GROUP" -n "$APP" --function-name DeviceEvents -o none 2>/dev/null; do
		tries=$((tries + 1))
		[ "$tries" -lt 60 ] || die "the DeviceEvents function did not appear in $APP: see the app's log stream, then run again"
		sleep "$POLL_SECONDS"
	done
}

deploy_events() {
	TOPIC="${TOPIC:-$APP-device-events}"
	write_events_parameters
	if [ -z "$PREVIEWED_EVENTS" ]; then
		say "what-if: infra/events.json into $RESOURCE_GROUP"
		"$AZ" deployment group what-if -g "$RESOURCE_GROUP" -n "$EVENTS_DEPLOYMENT" --template-file infra/events.json --parameters "@$WORK/events.parameters.json"
	fi
	say "deploying infra/events.json into $RESOURCE_GROUP"
	"$AZ" deployment group create -g "$RESOURCE_GROUP" -n "$EVENTS_DEPLOYMENT" --template-file infra/events.json --parameters "@$WORK/events.parameters.json" -o none
	TOPIC_ID="/subscriptions/$SUBSCRIPTION/resourceGroups/$RESOURCE_GROUP/providers/Microsoft.EventGrid/topics/$TOPIC"
}

# ---- smoke test ---------------------------------------------------------------------------

# me prints the signed-in identity's object id and principal type.
me() {
	if [ "$("$AZ" account show --query user.type -o tsv)" = servicePrincipal ]; then
		printf '%s ServicePrincipal' "$("$AZ" ad sp show --id "$("$AZ" account show --query user.name -o tsv)" --query id -o tsv)"
	else
		printf '%s User' "$("$AZ" ad signed-in-user show --query id -o tsv)"
	fi
}

# remove_smoke_sender removes every EventGrid Data Sender assignment of the deployer on the
# topic: the deployer is not one of SENDERS (checked before granting), so any such assignment
# is the smoke test's, this run's or one a stopped run left.
remove_smoke_sender() {
	[ -n "${SMOKE_PRINCIPAL:-}" ] && [ -n "${TOPIC_ID:-}" ] || return 0
	local ids
	ids="$("$AZ" role assignment list --assignee "$SMOKE_PRINCIPAL" --role "$SENDER_ROLE" --scope "$TOPIC_ID" --query "[].id" -o tsv 2>/dev/null || true)"
	if [ -n "$ids" ]; then
		say "removing the smoke test's sender role from $SMOKE_PRINCIPAL"
		# shellcheck disable=SC2086 # one id per word
		"$AZ" role assignment delete --ids $ids -o none
	fi
}

smoke_test() {
	local principal type who
	who="$(me)" || die "cannot tell who is signed in (az account show): the smoke test needs it"
	read -r principal type <<<"$who"
	[ -n "$principal" ] || die "cannot tell who is signed in: the smoke test needs your object id"
	if split_list "${SENDERS:-}" | grep -qix "$principal"; then
		say "smoke test skipped: you ($principal) are one of SENDERS; publish a dry-run event yourself (docs/deploy.md)"
		return
	fi
	SMOKE_PRINCIPAL="$principal" # from here on, the exit removes the role whatever happens
	remove_smoke_sender          # a sender role a stopped run left behind
	say "smoke test: granting you ($principal) EventGrid Data Sender on $TOPIC until it ends"
	"$AZ" role assignment create --assignee-object-id "$principal" --assignee-principal-type "$type" --role "$SENDER_ROLE" --scope "$TOPIC_ID" -o none

	local id endpoint event op host key tries=0 status=""
	id="smoke-$(date -u +%Y%m%dT%H%M%SZ)-$RANDOM"
	endpoint="$(output "$EVENTS_DEPLOYMENT" topicEndpoint)"
	event="{\"specversion\":\"1.0\",\"id\":\"$id\",\"source\":\"$SMOKE_SOURCE\",\"type\":\"device-lost\",\"subject\":\"devices/smoke-test-device\",\"data\":{\"registrationId\":\"smoke-test-device\",\"dryRun\":true,\"reason\":\"make deploy smoke test\"}}"
	# The role takes a few minutes to reach Event Grid: 401/403 until then.
	until "$AZ" rest --method post --url "$endpoint" --resource https://eventgrid.azure.net \
		--headers "Content-Type=application/cloudevents+json; charset=utf-8" --body "$event" -o none 2>/dev/null; do
		tries=$((tries + 1))
		[ "$tries" -lt 30 ] || {
			say "smoke test: the topic did not accept the event; the sender role is removed, nothing else changed"
			return 1
		}
		sleep "$POLL_SECONDS"
	done
	# The operation id, as deprovision.OperationID derives it: sha256(source NUL id), 16 bytes.
	op="op-$(printf '%s\0%s' "$SMOKE_SOURCE" "$id" | sha256 | cut -c1-32)"
	host="$("$AZ" functionapp show -g "$RESOURCE_GROUP" -n "$APP" --query defaultHostName -o tsv)"
	key="$("$AZ" functionapp function keys list -g "$RESOURCE_GROUP" -n "$APP" --function-name Operations --query default -o tsv)"
	tries=0
	until status="$("$AZ" rest --method get --url "https://$host/api/deprovision/operations/$op" --skip-authorization-header \
		--headers "x-functions-key=$key" --query status -o tsv 2>/dev/null)"; do
		tries=$((tries + 1))
		[ "$tries" -lt 30 ] || {
			say "smoke test: operation $op did not appear in the journal; see the app's log (docs/app.md, Logs)"
			return 1
		}
		sleep "$POLL_SECONDS"
	done
	say "smoke test: the event reached the app and was journaled as operation $op ($status)"
	remove_smoke_sender
	SMOKE_PRINCIPAL=""
}

sha256() {
	if command -v sha256sum >/dev/null; then sha256sum; else shasum -a 256; fi
}

cleanup() {
	remove_smoke_sender
	[ -z "${WORK:-}" ] || rm -rf "$WORK"
}

main() {
	check_inputs
	check_tools
	WORK="$(mktemp -d)"
	trap cleanup EXIT
	resolve_iot
	check_group
	APP=""
	[ -n "$NEW_GROUP" ] || APP="$(existing_app)"
	decide_dry_run
	write_main_parameters
	PREVIEWED_EVENTS=""
	preview
	[ -z "$APP" ] || PREVIEWED_EVENTS=1
	confirm
	deploy_infra
	deploy_code
	deploy_events
	if [ "${SMOKE_TEST:-true}" = true ]; then
		smoke_test
	fi
	say "deployed $APP: https://$("$AZ" functionapp show -g "$RESOURCE_GROUP" -n "$APP" --query defaultHostName -o tsv)/api"
	if [ "$DRY_RUN" = true ]; then
		say "DRY_RUN is on: every request only plans. When the plans look right: make deploy ... DRY_RUN=false"
	fi
	say "ask it what happened to a device: go run ./cmd/dpsdeprov --url https://<host>/api --key \$(az functionapp function keys list -g $RESOURCE_GROUP -n $APP --function-name Operations --query default -o tsv) status <registration id>"
}

main "$@"
