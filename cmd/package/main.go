// Command package builds the deployment zip of the function app: host.json, the function
// folders' function.json files and the custom handler cross-compiled for Linux on amd64.
//
//	go run ./cmd/package -o dist/dpsdeprov.zip
//
// Deploy the zip with `az functionapp deployment source config-zip` (infra/README.md).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"

	"dpsdeprov/internal/pack"
)

func main() {
	root := flag.String("root", ".", "app root: the folder holding host.json, the function folders and the handler's main package")
	out := flag.String("o", "dist/dpsdeprov.zip", "zip to write")
	mainPkg := flag.String("main", ".", "the handler's main package, relative to -root")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	res, err := pack.Build(ctx, pack.Options{Root: *root, Output: *out, MainPackage: *mainPkg, Stderr: os.Stderr})
	if err != nil {
		fmt.Fprintln(os.Stderr, "package:", err)
		os.Exit(1)
	}
	fmt.Printf("%s: %d bytes\n", *out, res.Size)
	for _, e := range res.Entries {
		fmt.Println("  " + e)
	}
}
