package subservice

import (
	"encoding/json"
	"strings"
	"testing"
)

var benchData = json.RawMessage(`{"text":"` + strings.Repeat("x", 88) + `"}`)

func BenchmarkEncodeMessage(b *testing.B) {
	f := &Frame{Op: OpMessage, From: "8b41e07c2d95f3a6b0c7d1e4f92a5c60", FromName: "bravo", Data: benchData}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := EncodeFrame(f); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeSend(b *testing.B) {
	f := &Frame{Op: OpSend, ID: 12345, To: "8b41e07c2d95f3a6b0c7d1e4f92a5c60", Data: benchData}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := EncodeFrame(f); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeSend(b *testing.B) {
	line, _ := EncodeFrame(&Frame{Op: OpSend, ID: 12345, To: "8b41e07c2d95f3a6b0c7d1e4f92a5c60", Data: benchData})
	line = line[:len(line)-1]
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeFrame(line); err != nil {
			b.Fatal(err)
		}
	}
}
