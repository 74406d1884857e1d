//go:build !race

package eventbuild

const raceEnabled = false
