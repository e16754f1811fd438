//go:build !xla

package model

const xlaLinked = false

func resolveXLA(spec string) string { return spec }
