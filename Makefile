# Nearby. `make test` is the whole suite; CI runs exactly that (.ci/run).
GO       ?= go
export GOTOOLCHAIN := local
export GOFLAGS     := -mod=readonly
TESTFLAGS ?= -race -count=1 -timeout 14m
PKGS     ?= ./...

.PHONY: all build test test-short vet fuzz bench scale soak demo clean

all: build

build:
	$(GO) build -o bin/nearby ./cmd/nearby
	$(GO) build -o bin/nearby-tray ./cmd/nearby-tray

# The suite runs inside a fresh network namespace (scripts/isolated.sh):
# modules are fetched and packages compiled first, since the namespace has no
# route out.
test:
	$(GO) mod download
	$(GO) vet $(PKGS)
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { echo "gofmt needed:"; gofmt -l .; exit 1; }
	$(GO) test -race -count=1 -run XXX_build_only $(PKGS) >/dev/null
	scripts/isolated.sh $(GO) test $(TESTFLAGS) $(PKGS)

test-short:
	$(GO) mod download
	scripts/isolated.sh $(GO) test -short $(PKGS)

vet:
	$(GO) vet $(PKGS)

# A short fuzz run of every decoder (seeds live in each package's testdata/).
FUZZTIME ?= 20s
fuzz:
	scripts/fuzz.sh $(FUZZTIME)

bench:
	$(GO) mod download
	scripts/isolated.sh $(GO) test -run '^$$' -bench . -benchmem -timeout 30m $(PKGS)

# The documented scale and soak runs (docs/SCALING.md); `make test` runs
# reduced versions of both. Needs root. SCALE=N nodes, SOAK=duration.
SCALE ?= 50
SOAK  ?= 5m
scale:
	$(GO) mod download
	NEARBY_SCALE=$(SCALE) scripts/isolated.sh $(GO) test -run 'TestScale$$' -v -timeout 30m ./internal/e2e/

soak:
	$(GO) mod download
	NEARBY_SOAK=$(SOAK) scripts/isolated.sh $(GO) test -run 'TestSoak$$' -v -timeout 30m ./internal/e2e/

# Three hosts on a virtual LAN with the example plugins (needs root).
demo: build
	./bin/nearby demo

clean:
	rm -rf bin
