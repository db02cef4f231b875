// kstatus prints what sigs.k8s.io/cli-utils' kstatus library (the one Flux and
// Argo CD-style tooling use) computes for each object it reads as JSON on stdin
// (one object, or a List with items): {"name": ..., "status": ..., "message": ...}.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type result struct {
	Name    string `json:"name"`
	Status  string `json:"status"`
	Message string `json:"message"`
}

func main() {
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail(err)
	}
	var doc map[string]interface{}
	// apimachinery's decoder keeps integers int64, as the API machinery (and kstatus) expect.
	if err := utiljson.Unmarshal(raw, &doc); err != nil {
		fail(err)
	}
	objects := []map[string]interface{}{doc}
	if items, ok := doc["items"].([]interface{}); ok {
		objects = objects[:0]
		for _, item := range items {
			objects = append(objects, item.(map[string]interface{}))
		}
	}
	results := []result{}
	for _, object := range objects {
		u := &unstructured.Unstructured{Object: object}
		computed, err := status.Compute(u)
		if err != nil {
			fail(err)
		}
		results = append(results, result{Name: u.GetName(), Status: computed.Status.String(), Message: computed.Message})
	}
	out, _ := json.Marshal(results)
	fmt.Println(string(out))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "kstatus:", err)
	os.Exit(1)
}
