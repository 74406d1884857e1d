//go:build race

package eventbuild

const raceEnabled = true
