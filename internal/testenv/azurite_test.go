package testenv

import (
	"context"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
)

func TestMain(m *testing.M) { Main(m) }

func TestAzuriteServesTables(t *testing.T) {
	a := SharedAzurite(t)
	svc, err := aztables.NewServiceClientFromConnectionString(a.ConnectionString(), nil)
	if err != nil {
		t.Fatal(err)
	}
	name := UniqueName("t")
	if _, err := svc.CreateTable(context.Background(), name, nil); err != nil {
		t.Fatalf("creating table %s: %v", name, err)
	}
	c := svc.NewClient(name)
	if _, err := c.AddEntity(context.Background(), []byte(`{"PartitionKey":"p","RowKey":"r","V":"x"}`), nil); err != nil {
		t.Fatal(err)
	}
	got, err := c.GetEntity(context.Background(), "p", "r", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Value) == 0 {
		t.Fatal("empty entity")
	}
}
